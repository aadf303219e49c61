//! `broker login` and `broker logout`: a token from `POST /v1/auth/token`, kept
//! in the credentials file for later client commands (see [`super::credentials`]).

use std::io::{self, BufRead, IsTerminal, Write};

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::client::{self, Api, ConnectArgs, DEFAULT_URL};
use super::credentials::{self, Credentials, Login};
use super::output;
use super::password::{self, Purpose};

/// `broker login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The user name [default: asked at a terminal].
    #[arg(long)]
    pub user: Option<String>,
}

/// `broker logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Trades a user name and password for a token.
pub async fn token(api: &Api, username: &str, password: &str) -> anyhow::Result<(String, u64)> {
    let answer = api
        .post(
            "/v1/auth/token",
            &json!({"username": username, "password": password}),
        )
        .await?;
    let token = answer
        .get("access_token")
        .and_then(|v| v.as_str())
        .context("the broker's token answer has no access_token")?
        .to_owned();
    let expires_in = answer
        .get("expires_in")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    Ok((token, expires_in))
}

/// Runs `broker login`: asks for the password, fetches a token, saves it.
pub fn login(args: LoginArgs) -> anyhow::Result<()> {
    let path = credentials::default_path()?;
    let url = target_url(&args.connect, &path)?;
    let username = match args.user {
        Some(user) => user,
        None => ask_username()?,
    };
    let password = password::read(
        &format!("Password for {username} at {url}: "),
        Purpose::Login,
    )?;
    let api = Api::new(&url, None)?;
    let (token, expires_in) = client::run(token(&api, &username, &password))?;
    let login = Login {
        username: username.clone(),
        token,
        expires_at_unix_secs: client::now_unix_secs().saturating_add(expires_in),
    };
    Credentials::update(&path, |saved| saved.insert(&url, login))?;
    output::line(format!(
        "Logged in to {url} as {username:?}; the token is valid for {} (saved in {}).",
        lifetime(expires_in),
        path.display()
    ))?;
    Ok(())
}

/// Runs `broker logout`: forgets the token of the broker.
pub fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let path = credentials::default_path()?;
    let url = target_url(&args.connect, &path)?;
    if Credentials::update(&path, |saved| saved.remove(&url))? {
        output::line(format!("Logged out of {url}."))?;
    } else {
        output::line(format!("Not logged in to {url}; nothing to do."))?;
    }
    Ok(())
}

/// The broker `--url` names, else the one of the last login, else the default.
fn target_url(connect: &ConnectArgs, credentials: &std::path::Path) -> anyhow::Result<String> {
    match &connect.url {
        Some(url) => client::normalize_url(url),
        None => Ok(Credentials::load(credentials)?
            .current_url
            .unwrap_or_else(|| DEFAULT_URL.to_owned())),
    }
}

/// A token lifetime in words: `30 seconds`, `1 minute`, `90 minutes`, `1 hour`,
/// `2 minutes and 5 seconds`.
fn lifetime(secs: u64) -> String {
    let count = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    match secs {
        0..60 => count(secs, "second"),
        _ if secs.is_multiple_of(3600) => count(secs / 3600, "hour"),
        _ if secs.is_multiple_of(60) => count(secs / 60, "minute"),
        _ => format!(
            "{} and {}",
            count(secs / 60, "minute"),
            count(secs % 60, "second")
        ),
    }
}

/// Asks for the user name at a terminal.
fn ask_username() -> anyhow::Result<String> {
    if !io::stdin().is_terminal() {
        anyhow::bail!("give --user: stdin is not a terminal to ask on");
    }
    eprint!("User: ");
    io::stderr().flush()?;
    let mut name = String::new();
    io::stdin().lock().read_line(&mut name)?;
    let name = name.trim();
    if name.is_empty() {
        anyhow::bail!("no user name given");
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_as_words() {
        assert_eq!(lifetime(0), "0 seconds");
        assert_eq!(lifetime(1), "1 second");
        assert_eq!(lifetime(30), "30 seconds");
        assert_eq!(lifetime(60), "1 minute");
        assert_eq!(lifetime(90), "1 minute and 30 seconds");
        assert_eq!(lifetime(1800), "30 minutes");
        assert_eq!(lifetime(3600), "1 hour");
        assert_eq!(lifetime(5400), "90 minutes");
        assert_eq!(lifetime(86_400), "24 hours");
    }
}
