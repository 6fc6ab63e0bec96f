//! When a retry is safe, and the budget that caps retries. (Skeleton: the core
//! helper fills it in.)
