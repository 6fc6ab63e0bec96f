//! Header lists shared by [`Request`](crate::Request) and [`Response`](crate::Response).

/// Headers in the order given, names in lower case; values are bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    pub(crate) fn as_list(&self) -> &[(String, Vec<u8>)] {
        &self.0
    }

    pub(crate) fn push(&mut self, name: &str, value: Vec<u8>) {
        self.0.push((name.to_ascii_lowercase(), value));
    }

    /// The first value of `name`, if present and valid UTF-8.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}
