"""Desired state: the manifest models, YAML loading with FILE:LINE:COL, password sources."""

import os

# yaml-rs is built with mimalloc, which reserves 1 GiB of address space as soon as it is loaded:
# under a memory cap (`ulimit -v 2000000`) half of it is gone before a file is read, and a Rust
# allocation that then fails aborts the process (SIGABRT, no message). Without the reservation
# mimalloc asks the OS for memory as it needs it. Set before loader.py imports yaml_rs.
os.environ.setdefault("MIMALLOC_ARENA_RESERVE", "0")
