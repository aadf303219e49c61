//! Passwords from stdin: at a terminal, asked without echo (twice for a new
//! password); from a pipe, the first line (`echo "$PW" | broker user add bob`).
//! Never from a flag, which would show in `ps` and in the shell's history.

use std::io::{self, BufRead, IsTerminal, Read};

use anyhow::Context as _;

use crate::auth::PASSWORD_BYTES_MAX;

/// Whether the password is new (asked twice at a terminal) or for a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A password being set: asked twice so a typo does not lock the user out.
    New,
    /// A password being checked: asked once.
    Login,
}

/// Reads a password: from the terminal when stdin is one, else one line of stdin.
pub fn read(prompt: &str, purpose: Purpose) -> anyhow::Result<String> {
    if io::stdin().is_terminal() {
        return ask(prompt, purpose);
    }
    from_reader(&mut io::stdin().lock())
}

/// Asks at the terminal, without echo.
fn ask(prompt: &str, purpose: Purpose) -> anyhow::Result<String> {
    let password = rpassword::prompt_password(prompt).context("cannot read the password")?;
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    if purpose == Purpose::New {
        let again = rpassword::prompt_password("Repeat the password: ")
            .context("cannot read the password")?;
        if again != password {
            anyhow::bail!("the two passwords differ; nothing was changed");
        }
    }
    Ok(password)
}

/// The first line of `reader`, without its line ending; at most
/// [`PASSWORD_BYTES_MAX`] bytes, not empty.
pub fn from_reader(reader: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = Vec::new();
    // A password, "\r\n" and one more byte: enough to tell a too long line.
    let limit = PASSWORD_BYTES_MAX as u64 + 3;
    reader
        .take(limit)
        .read_until(b'\n', &mut line)
        .context("cannot read the password from stdin")?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > PASSWORD_BYTES_MAX {
        anyhow::bail!("the password on stdin is longer than {PASSWORD_BYTES_MAX} bytes");
    }
    if line.is_empty() {
        anyhow::bail!("no password on stdin: pipe one line, or run this at a terminal");
    }
    String::from_utf8(line).context("the password on stdin is not UTF-8 text")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> anyhow::Result<String> {
        from_reader(&mut io::Cursor::new(input.to_vec()))
    }

    #[test]
    fn the_first_line_is_the_password() -> anyhow::Result<()> {
        assert_eq!(read(b"s3cret\n")?, "s3cret");
        assert_eq!(read(b"s3cret\r\nmore\n")?, "s3cret");
        assert_eq!(read(b"no newline")?, "no newline");
        assert_eq!(read(b" spaces kept \n")?, " spaces kept ");
        Ok(())
    }

    #[test]
    fn empty_long_and_binary_input_is_refused() {
        assert!(read(b"").is_err());
        assert!(read(b"\n").is_err());
        assert!(read(&[0xff, 0xfe, b'\n']).is_err());
        let long = vec![b'x'; PASSWORD_BYTES_MAX + 1];
        assert!(read(&long).unwrap_err().to_string().contains("longer"));
        let mut long_line = vec![b'x'; PASSWORD_BYTES_MAX + 1];
        long_line.push(b'\n');
        assert!(read(&long_line).is_err());
        let mut just_fits = vec![b'x'; PASSWORD_BYTES_MAX];
        assert!(read(&just_fits).is_ok());
        just_fits.extend(b"\r\n");
        assert!(read(&just_fits).is_ok());
    }
}
