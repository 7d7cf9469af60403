printf abc > secret.txt
