//! The REST catalog's `updateTable` endpoint, called directly with K2's staged requirements
//! and updates (serialised exactly as iceberg-rust's REST client sends them): the server
//! checks the requirements and applies the updates atomically, answering 409 on a
//! conflict. Authentication mirrors the REST client's: an OAuth2 client-credentials token
//! from `<uri>/v1/oauth/tokens` when a credential is configured, and the `prefix` the
//! server's `/v1/config` returns for the warehouse.

use iceberg::TableIdent;
use k2_common::config::{CatalogConfig, K2Config};
use serde_json::json;

use super::CommitError;
use crate::stage::Staged;

pub struct RestCommitter {
    http: reqwest::Client,
    uri: String,
    warehouse: String,
    /// `(client id, secret)`.
    credential: Option<(String, String)>,
    scope: String,
}

impl RestCommitter {
    pub fn new(config: &K2Config) -> Result<Self, CommitError> {
        let CatalogConfig::Rest {
            uri,
            credential,
            warehouse,
            properties,
            ..
        } = &config.catalog
        else {
            return Err(CommitError::Rest {
                status: None,
                message: "not a REST catalog".into(),
            });
        };
        let credential = credential.as_ref().map(|c| {
            let c = c.expose();
            match c.split_once(':') {
                Some((id, secret)) => (id.to_string(), secret.to_string()),
                None => (String::new(), c.to_string()),
            }
        });
        Ok(RestCommitter {
            http: reqwest::Client::new(),
            uri: uri.trim_end_matches('/').to_string(),
            warehouse: warehouse
                .clone()
                .unwrap_or_else(|| config.warehouse.location.clone()),
            credential,
            scope: properties
                .get("scope")
                .map_or("catalog".to_string(), str::to_string),
        })
    }

    async fn token(&self) -> Result<Option<String>, CommitError> {
        let Some((id, secret)) = &self.credential else {
            return Ok(None);
        };
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_secret", secret.as_str()),
            ("scope", self.scope.as_str()),
        ];
        if !id.is_empty() {
            form.push(("client_id", id.as_str()));
        }
        let body = json_of(
            self.http
                .post(format!("{}/v1/oauth/tokens", self.uri))
                .form(&form),
        )
        .await?;
        Ok(body["access_token"].as_str().map(str::to_string))
    }

    fn authorized(
        &self,
        request: reqwest::RequestBuilder,
        token: &Option<String>,
    ) -> reqwest::RequestBuilder {
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    pub async fn commit(&self, ident: &TableIdent, staged: Staged) -> Result<(), CommitError> {
        let token = self.token().await?;
        let config = json_of(
            self.authorized(self.http.get(format!("{}/v1/config", self.uri)), &token)
                .query(&[("warehouse", &self.warehouse)]),
        )
        .await?;
        let prefix = config["overrides"]["prefix"]
            .as_str()
            .or(config["defaults"]["prefix"].as_str())
            .map(|p| format!("{p}/"))
            .unwrap_or_default();
        let url = format!(
            "{}/v1/{prefix}namespaces/{}/tables/{}",
            self.uri,
            ident.namespace().to_url_string(),
            ident.name()
        );
        let body = json!({
            "identifier": {"namespace": ident.namespace().as_ref(), "name": ident.name()},
            "requirements": staged.requirements,
            "updates": staged.updates,
        });
        let response = self
            .authorized(self.http.post(&url), &token)
            .json(&body)
            .send()
            .await
            .map_err(rest)?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            409 => Err(CommitError::Conflict),
            status => Err(CommitError::Rest {
                status: Some(status),
                message: format!(
                    "{url}: {status}: {}",
                    response.text().await.unwrap_or_default()
                ),
            }),
        }
    }
}

/// The JSON answer to `request`; an error status is an error.
async fn json_of(request: reqwest::RequestBuilder) -> Result<serde_json::Value, CommitError> {
    request
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(rest)?
        .json()
        .await
        .map_err(rest)
}

fn rest(e: reqwest::Error) -> CommitError {
    CommitError::Rest {
        status: e.status().map(|s| s.as_u16()),
        message: e.to_string(),
    }
}
