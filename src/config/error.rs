//! Configuration errors: where (`$.rules[1].limits[0].window`) and what, and the checks on names
//! that several parts of the configuration share.

use std::fmt;

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        f.write_str(&lines.join("; "))
    }
}

/// Problems collected while reading or compiling: every one is reported, not only the first.
pub type Errors = Vec<ConfigError>;

pub trait Report {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>);
}

impl Report for Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(ConfigError::new(path, message));
    }
}

pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

/// Names end up in shared-data keys, logs and metric names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

pub fn name_rule(name: &str) -> String {
    format!("{name:?} must be 1 to 64 characters of letters, digits, '_', '-' or '.'")
}
