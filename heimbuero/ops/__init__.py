"""Operating a server: health probes, metrics, backup and restore, upgrades, logging setup,
the systemd unit. Nothing here is needed to route a call; the server and the CLI hook it in."""
