"""Layer 1, config: what each command can be told (dataclasses whose fields are the flags) and the
command line made from them. Imports only the base modules; loads no torch."""
