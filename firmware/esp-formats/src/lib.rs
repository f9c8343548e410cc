//! Byte formats of the ESP world, shared by the harness and the virtual board so that
//! both read and write exactly the same bytes.

pub mod atpki;
