//! quern scheduler (under construction).
#![forbid(unsafe_code)]
