//! A catalog that hands out one table exactly as it was when the committer checked its
//! offsets.
//!
//! iceberg-rust's `Transaction::commit` reloads the table and re-applies the append onto
//! whatever is current, which would commit stale offsets on top of another writer's.
//! Through this wrapper the append keeps its `RefSnapshotIdMatch` requirement on the checked
//! snapshot, so the real catalog rejects it as a conflict if anything was committed in
//! between. Everything else goes to the real catalog.

use std::sync::Arc;

use iceberg::Catalog;
use iceberg::table::Table;

/// `impl Catalog for $ty` with the given `load_table` and `update_table`, every other
/// method forwarded to `self.inner`: a wrapper exists to change how a table is loaded or
/// a commit is sent, and nothing else.
macro_rules! wrapping_catalog {
    ($ty:ty { $($custom:tt)* }) => {
        #[async_trait::async_trait]
        impl ::iceberg::Catalog for $ty {
            $($custom)*

            async fn list_namespaces(
                &self,
                parent: Option<&::iceberg::NamespaceIdent>,
            ) -> ::iceberg::Result<Vec<::iceberg::NamespaceIdent>> {
                self.inner.list_namespaces(parent).await
            }

            async fn create_namespace(
                &self,
                namespace: &::iceberg::NamespaceIdent,
                properties: ::std::collections::HashMap<String, String>,
            ) -> ::iceberg::Result<::iceberg::Namespace> {
                self.inner.create_namespace(namespace, properties).await
            }

            async fn get_namespace(
                &self,
                namespace: &::iceberg::NamespaceIdent,
            ) -> ::iceberg::Result<::iceberg::Namespace> {
                self.inner.get_namespace(namespace).await
            }

            async fn namespace_exists(
                &self,
                namespace: &::iceberg::NamespaceIdent,
            ) -> ::iceberg::Result<bool> {
                self.inner.namespace_exists(namespace).await
            }

            async fn update_namespace(
                &self,
                namespace: &::iceberg::NamespaceIdent,
                properties: ::std::collections::HashMap<String, String>,
            ) -> ::iceberg::Result<()> {
                self.inner.update_namespace(namespace, properties).await
            }

            async fn drop_namespace(
                &self,
                namespace: &::iceberg::NamespaceIdent,
            ) -> ::iceberg::Result<()> {
                self.inner.drop_namespace(namespace).await
            }

            async fn list_tables(
                &self,
                namespace: &::iceberg::NamespaceIdent,
            ) -> ::iceberg::Result<Vec<::iceberg::TableIdent>> {
                self.inner.list_tables(namespace).await
            }

            async fn create_table(
                &self,
                namespace: &::iceberg::NamespaceIdent,
                creation: ::iceberg::TableCreation,
            ) -> ::iceberg::Result<::iceberg::table::Table> {
                self.inner.create_table(namespace, creation).await
            }

            async fn drop_table(&self, table: &::iceberg::TableIdent) -> ::iceberg::Result<()> {
                self.inner.drop_table(table).await
            }

            async fn purge_table(&self, table: &::iceberg::TableIdent) -> ::iceberg::Result<()> {
                self.inner.purge_table(table).await
            }

            async fn table_exists(&self, table: &::iceberg::TableIdent) -> ::iceberg::Result<bool> {
                self.inner.table_exists(table).await
            }

            async fn rename_table(
                &self,
                src: &::iceberg::TableIdent,
                dest: &::iceberg::TableIdent,
            ) -> ::iceberg::Result<()> {
                self.inner.rename_table(src, dest).await
            }

            async fn register_table(
                &self,
                table: &::iceberg::TableIdent,
                metadata_location: String,
            ) -> ::iceberg::Result<::iceberg::table::Table> {
                self.inner.register_table(table, metadata_location).await
            }
        }
    };
}
#[cfg(test)]
pub(crate) use wrapping_catalog;

/// The real catalog, with `table` pinned.
#[derive(Debug)]
pub struct PinnedCatalog {
    inner: Arc<dyn Catalog>,
    table: Table,
}

impl PinnedCatalog {
    pub fn new(inner: Arc<dyn Catalog>, table: Table) -> Self {
        PinnedCatalog { inner, table }
    }
}

wrapping_catalog!(PinnedCatalog {
    async fn load_table(&self, table: &iceberg::TableIdent) -> iceberg::Result<Table> {
        if table == self.table.identifier() {
            Ok(self.table.clone())
        } else {
            self.inner.load_table(table).await
        }
    }

    async fn update_table(&self, commit: iceberg::TableCommit) -> iceberg::Result<Table> {
        self.inner.update_table(commit).await
    }
});
