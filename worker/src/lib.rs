//! quern worker (under construction).
#![forbid(unsafe_code)]
