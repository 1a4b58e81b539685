from avatar.cli import entrypoint

entrypoint()
