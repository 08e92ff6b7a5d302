//! The `agora` command line, one file per command: `query`, `shell`,
//! `check`, `products`, `serve`, `audit`, `hash-password` and `demo`; the
//! options they share (`args`), and the SQL front ends' parts (`backend`,
//! `output`, `statements`).

pub mod args;
pub mod audit;
pub mod backend;
pub mod check;
pub mod demo;
pub mod hash_password;
pub mod output;
pub mod products;
pub mod query;
pub mod serve;
pub mod shell;
pub mod statements;
