DROP TABLE user_activity; DROP TABLE users;
