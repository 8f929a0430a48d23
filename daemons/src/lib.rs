//! volcore's binaries. This build ships `volcli` with its offline commands
//! (`policy check`, `global check`, `runtime check`); the daemons (volmaster, volplugin,
//! volsupervisor, volstack) are not built yet.
