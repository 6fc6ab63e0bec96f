//! The PROXY protocol (v1 text and v2 binary): the address of the client a proxy in
//! front of wharf accepted, sent ahead of the proxied bytes. Read only from trusted
//! proxies, on listeners that enable it, before TLS.
