//! Builds a kube-rs client from `[kubernetes] kubeconfig`: token, client certificate, exec
//! plugins and CA as kube-rs supports them. Errors say which file and what is wrong; the
//! token never reaches a log line.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("kubeconfig {path}: cannot read: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubeconfig {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("kubeconfig {path}: cannot build a client: {source}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
}

/// Who we are to the API server, for the start-up log line (never the credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub server: String,
    pub user: String,
    pub auth: &'static str,
}

/// Reads the kubeconfig and builds a client. Does not contact the API server: an
/// unreachable server must not block start-up (the watchers retry with backoff).
pub async fn connect(path: &Path) -> Result<(Client, Identity), ConnectError> {
    // Read it ourselves first: kube's error for a missing file does not name the file.
    std::fs::metadata(path).map_err(|source| ConnectError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| ConnectError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    let identity = identity(&kubeconfig);
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| ConnectError::Invalid {
            path: path.to_owned(),
            source,
        })?;
    let client = Client::try_from(config).map_err(|source| ConnectError::Client {
        path: path.to_owned(),
        source,
    })?;
    Ok((client, identity))
}

fn identity(kc: &Kubeconfig) -> Identity {
    let ctx = kc
        .current_context
        .as_ref()
        .and_then(|name| kc.contexts.iter().find(|c| &c.name == name))
        .and_then(|c| c.context.as_ref());
    let server = ctx
        .and_then(|c| kc.clusters.iter().find(|cl| cl.name == c.cluster))
        .and_then(|cl| cl.cluster.as_ref())
        .and_then(|cl| cl.server.clone())
        .unwrap_or_else(|| "<no server>".into());
    let user_name = ctx.and_then(|c| c.user.clone());
    let auth_info = user_name
        .as_ref()
        .and_then(|u| kc.auth_infos.iter().find(|a| &a.name == u))
        .and_then(|a| a.auth_info.as_ref());
    let auth = match auth_info {
        Some(a) if a.token.is_some() || a.token_file.is_some() => "token",
        Some(a) if a.client_certificate.is_some() || a.client_certificate_data.is_some() => {
            "client certificate"
        }
        Some(a) if a.exec.is_some() => "exec plugin",
        Some(a) if a.username.is_some() => "basic",
        _ => "none",
    };
    Identity {
        server,
        user: user_name.unwrap_or_else(|| "<none>".into()),
        auth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: http://127.0.0.1:6443
contexts:
- name: lbd@lab
  context: {cluster: lab, user: lbd}
current-context: lbd@lab
users:
- name: lbd
  user:
    token: s3cret-token-value
"#;

    #[tokio::test]
    async fn identity_names_server_and_user_but_never_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let (_client, id) = connect(&path).await.unwrap();
        assert_eq!(id.server, "http://127.0.0.1:6443");
        assert_eq!(id.user, "lbd");
        assert_eq!(id.auth, "token");
        assert!(!format!("{id:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn missing_kubeconfig_is_a_clear_error_naming_the_file() {
        let Err(err) = connect(Path::new("/nonexistent/lb/kubeconfig")).await else {
            panic!("a missing kubeconfig must fail");
        };
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/lb/kubeconfig") && msg.contains("cannot read"));
    }

    #[tokio::test]
    async fn garbage_kubeconfig_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, "clusters: [[[not yaml").unwrap();
        let Err(err) = connect(&path).await else {
            panic!("a garbage kubeconfig must fail");
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("kubeconfig {}", path.display())),
            "{msg}"
        );
    }
}
