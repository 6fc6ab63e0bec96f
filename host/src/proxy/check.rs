//! Active health checks. (Skeleton: the core helper fills it in.)
