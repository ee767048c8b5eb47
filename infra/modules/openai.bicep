// Azure OpenAI with a chat and an embedding deployment; keys disabled (disableLocalAuth), so every call
// signs in with Entra ID: the app's managed identity and the signed-in learner get Cognitive Services
// OpenAI User on this account.

@description('Name of the account (also its custom subdomain, which Entra ID sign-in requires)')
param name string

@description('Region: must offer both models with the chosen deployment types and have quota for them')
param location string

@description('Tags')
param tags object = {}

@description('Chat deployment name (AZURE_OPENAI_CHAT_DEPLOYMENT)')
param chatDeploymentName string

@description('Chat model name')
param chatModelName string

@description('Chat model version')
param chatModelVersion string

@description('Chat deployment type (GlobalStandard, Standard, DataZoneStandard)')
param chatDeploymentType string

@description('Chat capacity in thousands of tokens per minute (counts against the regional quota)')
param chatCapacity int

@description('Embedding deployment name (AZURE_OPENAI_EMBEDDING_DEPLOYMENT)')
param embeddingDeploymentName string

@description('Embedding model name')
param embeddingModelName string

@description('Embedding model version')
param embeddingModelVersion string

@description('Embedding deployment type (Standard, GlobalStandard)')
param embeddingDeploymentType string

@description('Embedding capacity in thousands of tokens per minute (counts against the regional quota)')
param embeddingCapacity int

@description('Principal id of the app\'s managed identity')
param appPrincipalId string

@description('Object id of the signed-in learner; empty: no learner role')
param userPrincipalId string = ''

@description('User for a person, ServicePrincipal for a CI identity')
param userPrincipalType string = 'User'

var roles = loadJsonContent('../roles.json')

resource account 'Microsoft.CognitiveServices/accounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    customSubDomainName: name
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: true
  }
}

resource chat 'Microsoft.CognitiveServices/accounts/deployments@2023-05-01' = {
  parent: account
  name: chatDeploymentName
  sku: {
    name: chatDeploymentType
    capacity: chatCapacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: chatModelName
      version: chatModelVersion
    }
  }
}

// one deployment at a time: the service refuses concurrent changes to one account
resource embedding 'Microsoft.CognitiveServices/accounts/deployments@2023-05-01' = {
  parent: account
  name: embeddingDeploymentName
  dependsOn: [
    chat
  ]
  sku: {
    name: embeddingDeploymentType
    capacity: embeddingCapacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: embeddingModelName
      version: embeddingModelVersion
    }
  }
}

resource appOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, appPrincipalId, roles.cognitiveServicesOpenAIUser.id)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesOpenAIUser.id)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(account.id, userPrincipalId, roles.cognitiveServicesOpenAIUser.id)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesOpenAIUser.id)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

output name string = account.name
output endpoint string = account.properties.endpoint
output chatDeploymentName string = chat.name
output embeddingDeploymentName string = embedding.name
