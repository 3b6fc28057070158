//! `k2-admin schemas register`: put each shipped schema under its subject in the Schema
//! Registry with the configured compatibility level.

use std::collections::BTreeMap;

use k2_common::config::TopicsConfig;
use k2_common::registry::{RegistryError, SchemaRegistryClient};
use k2_common::schema::BuiltinSchema;

/// One subject's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub subject: String,
    pub schema_name: String,
    pub id: u32,
}

/// Subject → schema name for every configured topic (subjects shared by several exchanges
/// appear once).
pub fn subjects(topics: &TopicsConfig) -> BTreeMap<String, String> {
    topics
        .topic_specs()
        .into_iter()
        .map(|s| (s.subject, s.schema_name))
        .collect()
}

pub async fn register_all(
    client: &SchemaRegistryClient,
    topics: &TopicsConfig,
) -> Result<Vec<Registered>, RegistryError> {
    let level = topics.schema_registry().compatibility;
    let mut out = Vec::new();
    for (subject, schema_name) in subjects(topics) {
        let schema = BuiltinSchema::by_name(&schema_name).expect("validated by TopicsConfig");
        // Compatibility first, so the registration itself is checked under the right rule.
        client.set_compatibility(&subject, level).await?;
        let id = client.register(&subject, schema.text).await?;
        out.push(Registered {
            subject,
            schema_name,
            id,
        });
    }
    Ok(out)
}
