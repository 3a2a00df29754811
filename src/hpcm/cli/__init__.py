"""hpcm.cli"""
