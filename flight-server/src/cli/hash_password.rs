//! `agora hash-password`: hashes a password read from standard input, for
//! `auth.users[].password_hash`.

use std::process::ExitCode;

use anyhow::Result;

/// Runs `agora hash-password`: prints the hash of the password on standard input.
pub fn run() -> Result<ExitCode> {
    let password = read_password()?;
    println!("{}", agora_engine::identity::hash_password(&password).map_err(anyhow::Error::msg)?);
    Ok(ExitCode::SUCCESS)
}

/// Reads one password line from standard input, prompting on a terminal.
fn read_password() -> Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("password (input is shown): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!("empty password: give the password on standard input");
    }
    Ok(password)
}
