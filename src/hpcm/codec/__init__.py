"""hpcm.codec"""
