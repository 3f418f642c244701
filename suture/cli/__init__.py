"""The command line: parse, call one function, print, map errors to exit codes."""
