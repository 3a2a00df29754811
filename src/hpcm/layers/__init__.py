"""hpcm.layers"""
