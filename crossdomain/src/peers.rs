//! [`Peers`]: where another domain's node is. The operator's static map (`cross_domain.peers`,
//! domain → base URL of that domain's node) wins; any other domain is assumed to serve at
//! `https://<domain>` (its catalogue at `/.well-known/protocolstub/default`, its keys at
//! `/_matrix/key/v2/server`).

use std::collections::BTreeMap;

/// The URLs of one domain's node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUrls {
    pub domain: String,
    /// Without a trailing slash.
    pub base_url: String,
    /// `<base>/.well-known/protocolstub/default`.
    pub descriptor_url: String,
    /// `<base>/_matrix/key/v2/server`.
    pub keys_url: String,
}

/// The static map of peers, then the well-known fallback.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    map: BTreeMap<String, String>,
}

impl Peers {
    /// From domain → base URL (a trailing slash is ignored; domains are compared in lowercase).
    pub fn new(map: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            map: map
                .into_iter()
                .map(|(d, u)| (d.to_ascii_lowercase(), u.trim_end_matches('/').to_owned()))
                .collect(),
        }
    }

    /// Whether the static map names `domain`.
    pub fn is_mapped(&self, domain: &str) -> bool {
        self.map.contains_key(&domain.to_ascii_lowercase())
    }

    /// The URLs of `domain`'s node.
    pub fn resolve(&self, domain: &str) -> PeerUrls {
        let domain = domain.to_ascii_lowercase();
        let base_url = self
            .map
            .get(&domain)
            .cloned()
            .unwrap_or_else(|| format!("https://{domain}"));
        PeerUrls {
            descriptor_url: format!("{base_url}/.well-known/protocolstub/default"),
            keys_url: format!("{base_url}/_matrix/key/v2/server"),
            domain,
            base_url,
        }
    }
}

/// The origin (`scheme://host[:port]`) of an absolute URL, if it has one.
pub(crate) fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    if scheme.is_empty() || host.is_empty() || host.contains('@') {
        return None;
    }
    Some(format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_wins_then_https_on_the_domain() {
        let peers = Peers::new([("B.test".to_owned(), "http://127.0.0.1:9/".to_owned())]);
        let b = peers.resolve("b.test");
        assert!(peers.is_mapped("B.TEST"));
        assert_eq!(b.base_url, "http://127.0.0.1:9");
        assert_eq!(
            b.descriptor_url,
            "http://127.0.0.1:9/.well-known/protocolstub/default"
        );
        assert_eq!(b.keys_url, "http://127.0.0.1:9/_matrix/key/v2/server");
        let c = peers.resolve("c.example");
        assert!(!peers.is_mapped("c.example"));
        assert_eq!(
            c.descriptor_url,
            "https://c.example/.well-known/protocolstub/default"
        );
        assert_eq!(c.keys_url, "https://c.example/_matrix/key/v2/server");
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("ws://127.0.0.1:9/ws").as_deref(),
            Some("ws://127.0.0.1:9")
        );
        assert_eq!(
            origin_of("WSS://Node.B.test/ws?x").as_deref(),
            Some("wss://node.b.test")
        );
        assert_eq!(origin_of("/ws"), None);
        assert_eq!(origin_of("ws://u@h/ws"), None);
    }
}
