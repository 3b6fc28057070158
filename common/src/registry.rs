//! A small client for the Confluent Schema Registry REST API: the calls K2 makes and no more.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::config::{Compatibility, SchemaRegistryConfig};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry at {url} unreachable")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("schema registry {method} {url} answered {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("schema registry {url} sent an unexpected body")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

impl RegistryError {
    /// True for failures worth retrying (network, 5xx); 4xx answers are final.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500,
            RegistryError::Body { .. } => false,
        }
    }

    /// True when the registry refused a write because a concurrent one got there first.
    pub fn is_conflict(&self) -> bool {
        matches!(self, RegistryError::Status { status: 409, .. })
    }

    /// True when the registry said the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::Status { status: 404, .. })
    }
}

#[derive(Debug, Clone)]
pub struct SchemaRegistryClient {
    base: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

#[derive(Debug, Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(Debug, Deserialize)]
struct SchemaResponse {
    schema: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub id: u32,
    pub version: u32,
    pub schema: String,
}

impl SchemaRegistryClient {
    pub fn new(config: &SchemaRegistryConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("static reqwest configuration");
        let auth = config.username.clone().map(|u| {
            (
                u,
                config
                    .password
                    .as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            )
        });
        SchemaRegistryClient {
            base: config.url.trim_end_matches('/').to_string(),
            http,
            auth,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        (url, req)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        url: String,
        req: reqwest::RequestBuilder,
    ) -> Result<T, RegistryError> {
        let resp = req
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(RegistryError::Status {
                method,
                url,
                status: status.as_u16(),
                body,
            });
        }
        resp.json()
            .await
            .map_err(|source| RegistryError::Body { url, source })
    }

    /// Registers `schema` under `subject` (idempotent: the same schema returns its id).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let (url, req) = self.request(
            reqwest::Method::POST,
            &format!("/subjects/{}/versions", encode(subject)),
        );
        let req = req
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(&json!({ "schema": schema }));
        let r: IdResponse = self.send("POST", url, req).await?;
        Ok(r.id)
    }

    /// Sets the subject's compatibility level.
    ///
    /// Subjects are shared by every exchange of a data type, so several admins may set the
    /// same subject's level at once. Apicurio creates the rule on the first PUT and updates it
    /// on later ones; two first PUTs racing make the loser answer 409 ("rule already exists").
    /// The rule then exists, so the same PUT again is an update and settles it.
    pub async fn set_compatibility(
        &self,
        subject: &str,
        level: Compatibility,
    ) -> Result<(), RegistryError> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            let (url, req) = self.request(
                reqwest::Method::PUT,
                &format!("/config/{}", encode(subject)),
            );
            let req = req
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .json(&json!({ "compatibility": level.as_str() }));
            match self.send::<serde_json::Value>("PUT", url, req).await {
                Err(e) if e.is_conflict() && attempt < ATTEMPTS => attempt += 1,
                result => return result.map(|_| ()),
            }
        }
    }

    /// The writer schema with this global id.
    pub async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        let (url, req) = self.request(reqwest::Method::GET, &format!("/schemas/ids/{id}"));
        let r: SchemaResponse = self.send("GET", url, req).await?;
        Ok(r.schema)
    }

    /// The latest version registered under `subject`.
    pub async fn latest(&self, subject: &str) -> Result<SubjectVersion, RegistryError> {
        let (url, req) = self.request(
            reqwest::Method::GET,
            &format!("/subjects/{}/versions/latest", encode(subject)),
        );
        self.send("GET", url, req).await
    }
}

/// Subjects are dotted names; percent-encode the few characters a path cannot carry.
fn encode(subject: &str) -> String {
    subject
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
