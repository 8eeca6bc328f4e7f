"""Retention for 7+ years (BC-003): orders and audit rows live in monthly partitions
(gekko.archive.partitions); a month past its data class's hot window is written to a compressed,
checksummed file with a manifest, copied where configured, verified, and detached
(gekko.archive.archiver); `gekko archive verify` checks every file, `gekko archive restore`
attaches one month again, and a file is deleted only once its retention has ended."""
