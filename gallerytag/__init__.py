"""gallerytag: teach a computer to tag large image galleries (command-line entry point)."""
