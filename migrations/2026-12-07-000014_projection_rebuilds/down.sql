DROP TABLE projection_rebuilds;
