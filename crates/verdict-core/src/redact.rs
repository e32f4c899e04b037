//! Service URLs in messages and logs, without their passwords.

/// `scheme://user:password@host/...` → `scheme://user:***@host/...`; anything else as it is.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((auth, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_show() {
        assert_eq!(super::url("postgres://app:s3cret@db:5432/verdict"), "postgres://app:***@db:5432/verdict");
        assert_eq!(super::url("redis://:hunter2@cache:6379/0"), "redis://:***@cache:6379/0");
        assert_eq!(super::url("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
        assert_eq!(super::url("postgres://app@db/v"), "postgres://app@db/v");
    }
}
