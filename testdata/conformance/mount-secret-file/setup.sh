printf secretvalue > secret.txt
