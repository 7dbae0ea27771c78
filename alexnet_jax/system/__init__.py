"""The process and its surroundings, for every command: `cli` (a command's start, its flags and the
one-paragraph error), `runtime` (process tuning, an explicit call) and `files` (writers that leave a
whole file or directory, or none).
"""
