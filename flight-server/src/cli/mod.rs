//! The `agora` command line's SQL front ends: `agora query` and
//! `agora shell`, in-process or on a remote server.

pub mod backend;
pub mod output;
pub mod shell;
pub mod statements;
