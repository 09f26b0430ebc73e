//! Test harness (under construction).
#![forbid(unsafe_code)]
