"""The commands on top: the CLI, run lifecycle, batch, cluster, doctor, the terminal UI."""
