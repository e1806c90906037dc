"""The command-line faces: `tileserver` (main), `generate_tiles` (generate) and
`generate_controller` (controller)."""
