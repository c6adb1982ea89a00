"""`python -m gallerytag`: the same as the `gallerytag` command."""

from gallerytag.cli import main

main()
