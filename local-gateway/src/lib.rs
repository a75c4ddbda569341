//! Local stand-ins for what AWS provides around the functions. The binary (`main.rs`) serves the
//! API; this library holds what tests reuse.

pub mod streams;
