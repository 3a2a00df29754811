"""hpcm.eval"""
