//! Where the stores are: a server (`--url`, with `--token` / `ANNALS_TOKEN`), a data
//! directory opened directly (`--data DIR`, a store is `DIR/<name>`, as `annals serve
//! --data DIR` keeps it) or a PostgreSQL database opened directly (`--postgres URL`, in
//! `--postgres-schema`). Every verb that works on a store gets it from here as an
//! `Arc<dyn EventStore>`, whichever the location.

use std::path::PathBuf;
use std::sync::Arc;

use annals_client::HttpStore;
use annals_core::{Error, EventStore};
use annals_embedded::EmbeddedStore;
use annals_postgres::{PostgresDatabase, PostgresOptions};
use annals_server::check_store_name;

use crate::Failure;

/// The schema `copy` uses for a PostgreSQL URL in `--from` / `--to`.
pub(crate) const DEFAULT_SCHEMA: &str = "annals";

/// Where the stores are.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    /// A server, through its HTTP API.
    Server {
        /// The server's base URL.
        url: String,
        /// The bearer token, if the server wants one.
        token: Option<String>,
    },
    /// A data directory, opened in this process (a store is open in one process at a
    /// time: stop a server using it first).
    Data(PathBuf),
    /// A PostgreSQL database, opened in this process.
    Postgres {
        /// The connection URL.
        url: String,
        /// The schema holding the stores.
        schema: String,
    },
}

/// What opening a store that does not exist does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfMissing {
    /// "store not found" (exit 2), as a server answers.
    Fail,
    /// Create it (the verbs that fill a store: `import`, `secrets import`, the target
    /// of `copy`).
    Create,
}

impl Location {
    /// `LOCATION` of `copy --from/--to`: a server URL, a PostgreSQL URL or a directory.
    pub(crate) fn parse(location: &str, token: Option<&str>) -> Location {
        if location.starts_with("http://") || location.starts_with("https://") {
            Location::Server {
                url: location.to_owned(),
                token: token.map(str::to_owned),
            }
        } else if is_postgres_url(location) {
            Location::Postgres {
                url: location.to_owned(),
                schema: DEFAULT_SCHEMA.to_owned(),
            }
        } else {
            Location::Data(PathBuf::from(location))
        }
    }

    /// Whether the stores are opened in this process (not through a server).
    pub(crate) fn is_direct(&self) -> bool {
        !matches!(self, Location::Server { .. })
    }

    /// Connects (to PostgreSQL: once, for every store opened through the result).
    pub(crate) async fn connect(&self) -> Result<Connected, Failure> {
        Ok(match self {
            Location::Server { url, token } => Connected::Server {
                url: url.clone(),
                token: token.clone(),
            },
            Location::Data(dir) => Connected::Data(dir.clone()),
            Location::Postgres { url, schema } => {
                let options = PostgresOptions {
                    schema: schema.clone(),
                    ..PostgresOptions::default()
                };
                Connected::Postgres(PostgresDatabase::connect(url, options).await?)
            }
        })
    }

    /// Opens the store `name`.
    pub(crate) async fn open(
        &self,
        name: &str,
        if_missing: IfMissing,
    ) -> Result<Arc<dyn EventStore>, Failure> {
        self.connect().await?.open(name, if_missing).await
    }
}

/// A [`Location`] ready to open stores.
pub(crate) enum Connected {
    /// See [`Location::Server`].
    Server { url: String, token: Option<String> },
    /// See [`Location::Data`].
    Data(PathBuf),
    /// See [`Location::Postgres`].
    Postgres(PostgresDatabase),
}

impl Connected {
    /// Opens the store `name`.
    pub(crate) async fn open(
        &self,
        name: &str,
        if_missing: IfMissing,
    ) -> Result<Arc<dyn EventStore>, Failure> {
        match self {
            Connected::Server { url, token } => Ok(Arc::new(http_store(url, name, token)?)),
            Connected::Data(dir) => {
                let path = store_dir(dir, name)?;
                if if_missing == IfMissing::Fail && !path.is_dir() {
                    return Err(Error::not_found("store", name).into());
                }
                Ok(Arc::new(EmbeddedStore::open(path)?))
            }
            Connected::Postgres(db) => {
                if if_missing == IfMissing::Fail && !db.store_exists(name).await? {
                    return Err(Error::not_found("store", name).into());
                }
                Ok(Arc::new(db.open_store(name).await?))
            }
        }
    }

    /// Creates the store `name`; a store that exists already is a conflict (exit 2), as
    /// a server answers.
    pub(crate) async fn create(&self, name: &str) -> Result<(), Failure> {
        let exists = || Failure {
            code: 2,
            message: format!("store already exists: {name}"),
        };
        match self {
            Connected::Server { url, token } => Ok(http_store(url, name, token)?.create().await?),
            Connected::Data(dir) => {
                let path = store_dir(dir, name)?;
                if path.exists() {
                    return Err(exists());
                }
                let store = EmbeddedStore::open(path)?;
                Ok(store.close().await?)
            }
            Connected::Postgres(db) => {
                if db.create_store(name).await? {
                    Ok(())
                } else {
                    Err(exists())
                }
            }
        }
    }
}

fn http_store(url: &str, name: &str, token: &Option<String>) -> Result<HttpStore, Failure> {
    let store = HttpStore::new(url, name)?;
    Ok(match token {
        Some(t) => store.with_token(t.clone()),
        None => store,
    })
}

/// `dir/name`, once `name` is a store name the server would accept too: never a path
/// that leaves the data directory (`..`, `/`), never a hidden or trash directory.
fn store_dir(dir: &std::path::Path, name: &str) -> Result<PathBuf, Failure> {
    check_store_name(name)?;
    Ok(dir.join(name))
}

/// Whether `url` names a PostgreSQL database.
pub(crate) fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
