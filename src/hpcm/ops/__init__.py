"""hpcm.ops"""
