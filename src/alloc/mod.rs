//! The MetalLB-compatible IP allocator (pure).
