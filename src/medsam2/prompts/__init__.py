"""Prompts: the types (a box, a click, a mask on one frame; an object's prompts), their parsing from
command-line strings and prompts.json, and the conversion of viewer millimetres to voxel indices."""
