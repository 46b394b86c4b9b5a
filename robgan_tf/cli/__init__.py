"""The command-line tools (robgan-train, robgan-evaluate, ...): each module parses its flags and calls the
library. Import one module at a time: each defines its own absl flags."""
