//! Importer of MetalLB ConfigMaps and CRDs into lb.toml.
