"""The Tradovate partner API: wire models, client (auth, retries, penalties, pacing), endpoints."""
