//! How K2 prints an error for a person: the error and each of its causes, once, on one
//! line. K2's own errors keep their causes as sources and do not repeat them in their
//! message; some libraries' errors (iceberg's, object_store's) print their cause in their
//! message and also return it as their source, so a cause already printed is skipped.

use std::error::Error;
use std::fmt;

/// `error: cause: cause`, each cause once.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut printed = self.0.to_string();
        f.write_str(&printed)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !printed.contains(&text) {
                write!(f, ": {text}")?;
                printed.push_str(&text);
            }
            source = s.source();
        }
        Ok(())
    }
}

/// [`Chain`] as a string.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    Chain(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot reach the registry")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("request failed: connection refused")]
    struct Middle(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Inner;

    #[test]
    fn each_cause_is_printed_once() {
        assert_eq!(
            chain(&Outer(Middle(Inner))),
            "cannot reach the registry: request failed: connection refused"
        );
    }
}
