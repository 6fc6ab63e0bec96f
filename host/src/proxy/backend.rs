//! One backend's live state, shared by every pool generation that names its address
//! and by the requests in flight to it. (Skeleton: the core helper fills it in.)

/// One backend.
pub struct Backend {}
