//! Validation of queue names, job names, job ids and key prefixes. Names end up
//! inside Redis keys, so they are kept to a safe, readable alphabet.

use crate::{Error, Result};

/// Longest queue name accepted.
pub const MAX_QUEUE_NAME: usize = 128;
/// Longest job name accepted.
pub const MAX_JOB_NAME: usize = 256;
/// Longest explicit job id accepted.
pub const MAX_JOB_ID: usize = 256;

/// A queue name: 1 to 128 characters from `A-Z a-z 0-9 _ - .`.
pub fn validate_queue_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > MAX_QUEUE_NAME {
        Some(format!("it is longer than {MAX_QUEUE_NAME} bytes"))
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map(|c| format!("it contains {c:?}; use letters, digits, '_', '-' and '.'"))
    };
    match reason {
        Some(reason) => Err(Error::InvalidQueueName { name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

/// A key prefix: like a queue name, and `:` is allowed too.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_QUEUE_NAME
        && prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidOptions(format!(
            "key prefix {prefix:?} must be 1 to {MAX_QUEUE_NAME} characters from letters, digits, '_', '-', '.' and ':'"
        )))
    }
}

/// A job name: 1 to 256 bytes, no control characters.
pub fn validate_job_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_JOB_NAME {
        Some("it is longer than 256 bytes")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidJobName { name: name.to_owned(), reason: reason.to_owned() }),
        None => Ok(()),
    }
}

/// An explicit job id: 1 to 256 bytes, no control characters, no whitespace,
/// and not all digits (plain numbers are reserved for generated ids, so an
/// explicit id can never collide with one).
pub fn validate_job_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MAX_JOB_ID {
        Some("it is longer than 256 bytes")
    } else if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("it contains whitespace or a control character")
    } else if id.bytes().all(|b| b.is_ascii_digit()) {
        Some("plain numbers are reserved for generated ids; add a letter or a prefix")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidJobId { id: id.to_owned(), reason: reason.to_owned() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        assert!(validate_queue_name("emails.v2-eu_west").is_ok());
        for bad in ["", "a b", "a:b", "a{b", "ü"] {
            assert!(validate_queue_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_queue_name(&"a".repeat(129)).is_err());
    }

    #[test]
    fn job_ids() {
        assert!(validate_job_id("invoice-42").is_ok());
        assert!(validate_job_id("settlement@2026-11-23T02:00:00Z").is_ok());
        for bad in ["", "42", "a b", "a\nb"] {
            assert!(validate_job_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn job_names() {
        assert!(validate_job_name("send-email").is_ok());
        assert!(validate_job_name("").is_err());
        assert!(validate_job_name("a\u{7}").is_err());
    }
}
