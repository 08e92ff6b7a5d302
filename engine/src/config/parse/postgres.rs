//! A domain's `postgres:` connection.

use std::sync::Arc;

use agora_connectors::{DEFAULT_READ_PARTITIONS, PostgresConnection};
use serde_norway::Mapping;

use super::{Walker, describe, join};

impl Walker<'_> {
    /// A domain's PostgreSQL connection (`postgres:` key).
    pub(super) fn postgres(&mut self, map: &Mapping, path: &str, domain: &str) -> Option<Arc<PostgresConnection>> {
        let value = map.get("postgres")?;
        let path = join(path, "postgres");
        let keys = [
            "host",
            "port",
            "database",
            "user",
            "password_env",
            "password_file",
            "sslmode",
            "pool_size",
            "connect_timeout_seconds",
            "statement_timeout_seconds",
            "read_partitions",
        ];
        let map = self.mapping(value, &path, &keys)?;
        let host = self.string(map, "host", &path, true);
        let database = self.string(map, "database", &path, true);
        let user = self.string(map, "user", &path, true);
        let password = self.secret_from_env_or_file(map, "password", &path, false);
        let sslmode = self.string(map, "sslmode", &path, false).unwrap_or_else(|| "prefer".to_string());
        if !["disable", "prefer", "require", "verify-ca", "verify-full"].contains(&sslmode.as_str()) {
            self.problem(
                &join(&path, "sslmode"),
                format!("unknown sslmode '{sslmode}' (expected disable, prefer, require, verify-ca or verify-full)"),
            );
        }
        let mut number = |key: &str, default: u64, max: u64| -> u64 {
            match map.get(key) {
                None => default,
                Some(v) => match v.as_u64() {
                    Some(n) if n <= max => n,
                    _ => {
                        self.problem(
                            &join(&path, key),
                            format!("expected a whole number up to {max}, found {}", describe(v)),
                        );
                        default
                    }
                },
            }
        };
        let port = number("port", 5432, 65535) as u16;
        let pool_size = number("pool_size", 8, 1024) as u32;
        let connect_timeout = std::time::Duration::from_secs(number("connect_timeout_seconds", 5, 3600));
        let statement_timeout = std::time::Duration::from_secs(number("statement_timeout_seconds", 300, 86_400));
        let read_partitions = number("read_partitions", u64::from(DEFAULT_READ_PARTITIONS), 64) as u32;
        let connection = PostgresConnection::new(
            domain.to_string(),
            host?,
            port,
            database?,
            user?,
            password,
            sslmode,
            pool_size,
            connect_timeout,
            statement_timeout,
        );
        if read_partitions == 0 {
            self.problem(
                &join(&path, "read_partitions"),
                "expected at least 1 (1 reads every table with one statement)",
            );
        }
        match connection {
            Ok(c) => Some(Arc::new(c.with_read_partitions(read_partitions))),
            Err(message) => {
                self.problem(&path, message);
                None
            }
        }
    }
}
