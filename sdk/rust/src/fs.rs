//! Files inside a sandbox: `sb.fs().read("/etc/os-release").await`.

use futures::TryStreamExt;
use microsandbox_client::api::FileStat;
use microsandbox_client::AgentClient;

use crate::error::Result;

/// The file system of one sandbox.
#[derive(Debug, Clone)]
pub struct Fs {
    pub(crate) client: AgentClient,
    pub(crate) sandbox: String,
}

impl Fs {
    /// A file's whole content.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>> {
        let chunks = self.client.fs_read(&self.sandbox, path).await?;
        let parts: Vec<bytes::Bytes> = chunks.try_collect().await?;
        Ok(parts.concat())
    }

    /// A file's content as text (invalid UTF-8 replaced).
    pub async fn read_to_string(&self, path: &str) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read(path).await?).into_owned())
    }

    /// Write (create or replace) a file; returns the bytes written.
    pub async fn write(&self, path: &str, data: impl Into<bytes::Bytes>) -> Result<u64> {
        Ok(self
            .client
            .fs_write_bytes(&self.sandbox, path, None, data)
            .await?)
    }

    /// Copy a host file into the sandbox.
    pub async fn upload(&self, host_path: impl AsRef<std::path::Path>, path: &str) -> Result<u64> {
        Ok(self
            .client
            .fs_write_from_file(&self.sandbox, host_path, path)
            .await?)
    }

    /// Copy a sandbox file to the host.
    pub async fn download(
        &self,
        path: &str,
        host_path: impl AsRef<std::path::Path>,
    ) -> Result<u64> {
        Ok(self
            .client
            .fs_read_to_file(&self.sandbox, path, host_path)
            .await?)
    }

    pub async fn list(&self, path: &str) -> Result<Vec<FileStat>> {
        Ok(self.client.fs_list(&self.sandbox, path).await?)
    }

    pub async fn stat(&self, path: &str) -> Result<FileStat> {
        Ok(self.client.fs_stat(&self.sandbox, path).await?)
    }

    /// Make a directory (and its parents).
    pub async fn mkdir(&self, path: &str) -> Result<()> {
        Ok(self.client.fs_mkdir(&self.sandbox, path, true).await?)
    }

    /// Remove a file or a directory tree.
    pub async fn remove(&self, path: &str) -> Result<()> {
        Ok(self.client.fs_remove(&self.sandbox, path, true).await?)
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        Ok(self.client.fs_rename(&self.sandbox, from, to).await?)
    }

    /// Copy inside the sandbox.
    pub async fn copy(&self, from: &str, to: &str) -> Result<()> {
        Ok(self.client.fs_copy(&self.sandbox, from, to).await?)
    }
}
