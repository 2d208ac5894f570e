//! Library code behind the `bini` binary's commands (the binary only parses flags).

pub mod demo;
pub mod shell;
