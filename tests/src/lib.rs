//! End-to-end tests across koop's crates live in `tests/`; `src/bin/` holds the helper programs
//! they start as separate processes.
#![deny(missing_docs)]
